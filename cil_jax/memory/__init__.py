"""The exemplar memory of the methods that store old examples: pure
selection and budget (``selection``) and its life in a run
(``exemplars``)."""
