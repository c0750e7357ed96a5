"""What a finished run is used for; here: export of a fine-tuned text tower as a sentence-transformers
folder (``jaxcl.serve.export``)."""
