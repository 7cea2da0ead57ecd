"""The paper's exploration of task-specific directions (Si et al., arXiv 2409.01035, v1 and the
TPAMI version), from what cells recorded: full fine-tuning's change dW* = W - W0 defines the
true TSDs, and every adapter's directions are measured against them. measures.py holds the
definitions, tables.py a table per question, figures.py a figure per question, page.py the
report page. Deliberately empty, so importing one module does not import, or hash, the others."""
