"""Model-file tools behind `info`, `convert-official` and `export`: conversion of the authors' checkpoints
(``convert_official``) and parameter and FLOP counts (``inspect_model``). They import the model and
``checkpoint`` only.
"""
