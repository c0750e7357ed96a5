"""TFDS builders for the datasets jaxcl prepares itself (written as array_record, no TensorFlow).

Both builders are unregistered (`skip_registration=True`) so they never clash with TFDS catalog entries
of the same name; `jaxcl.data.sources` looks them up here.
"""
