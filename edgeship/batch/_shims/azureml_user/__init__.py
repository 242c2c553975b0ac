"""Stand-in for the ``azureml_user`` package ParallelRunStep puts beside an entry script."""
