"""Task data: the task and train-set registry (tasks.py), prompt templates (prompts.py), carving
and building the rows a grid reads (prepare.py), and tokenising and collating them (encoding.py).
Deliberately empty, so importing one module does not import, or hash, the others."""
