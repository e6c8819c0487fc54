"""The command line: `python -m e2diffsr_core` (``main``: the parser and exit codes), the options of
`superresolve` (``superresolve``) and of `superresolve-batch` (``batch``). It is the top layer: it may import
anything below it, and nothing imports it.
"""
