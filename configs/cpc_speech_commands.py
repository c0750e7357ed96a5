r"""CPC on Speech Commands (Warden 2018; TFDS `speech_commands`): 1-second 16 kHz clips of 35 words,
the paper's audio encoder (five 1-D convolutions, 160 samples per latent) and K = 12.

Command (after preparing the TFDS catalog dataset, which needs TensorFlow for TFDS's Audio feature,
both to prepare and to read: `pip install 'jaxcl[tensorflow]'`, then
`tfds build speech_commands --file_format=array_record --data_dir ~/.cache/jaxcl/tensorflow_datasets`;
nothing is downloaded by jaxcl):

  jaxcl train --config configs/cpc_speech_commands.py --workdir runs/cpc_speech_commands

Expected: not run here (no TensorFlow and no copy of the data on the development machine; the data
path it uses, variable-length int16 clips cut to `data.sequence_length`, is tested on a made dataset in
tests/test_cpc.py). Linear probe on the 35 words is the measure; the README says what was measured.
`get_config("smoke")` runs on PLAID for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False)
  c = experiment.sibling(__file__, "cpc_plaid", "smoke" if a.smoke else None)
  c.unlock()
  if not a.smoke:
    c.data = experiment.data_config("speech_commands")
    c.data.image_key = "audio"
    c.data.sequence_length = 16000        # 1 s; shorter clips zero-padded
    c.data.eval_split = "test"
    c.model.widths = (512, 512, 512, 512, 512)
    c.model.kernels = (10, 8, 4, 4, 4)
    c.model.strides = (5, 4, 2, 2, 2)     # 160 samples (10 ms) per latent
    c.method.crop_length = 16000           # 99 latents per clip
    c.method.prediction_steps = 12
    c.method.context_dim = 256
    c.method.input_transform = "none"     # samples are already in [-1, 1]
    c.batch_size = 64
    c.steps = 20_000
  return experiment.lock(c)
