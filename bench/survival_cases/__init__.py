"""What survives: one small check per (library, operation) cell of the survival table.

A cell does not ask "did it crash?" but "is the µP behaviour still right afterwards?". For every
library (mutransfer, microsoft/mup, unit-scaling u-µP) the same small GPT is set up the
library's way and trained for one AdamW step; that step is the *reference*. The operation
(deepcopy, pickle, state_dict round trip, meta → ``to_empty``, ``torch.compile(fullgraph=True)``,
DDP, FSDP2) is then applied to a fresh copy, the optimizer is built the library's standard way
from what the operation returned, and one step is taken on the same batch. The cell is:

- ``ok``: the loss (forward multipliers) and every parameter's update (per-parameter LR) match
  the reference;
- ``wrong``: it ran, but a loss or an update differs (the µP metadata was silently lost);
- ``fails``: the library raised (the first line of its error is recorded).

Modules: ``libraries`` (the three set-ups), ``check`` (reference step, comparison),
``operations`` (the in-process operations) and ``distributed`` (DDP and FSDP2 in 2 gloo
processes).
"""
