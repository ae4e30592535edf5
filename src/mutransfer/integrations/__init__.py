"""Integrations with other libraries; each imports its library lazily (an optional extra).

- ``mutransfer.integrations.hf``: Hugging Face ``transformers`` models built from a config
  (``pip install 'mutransfer[hf]'``).
"""
