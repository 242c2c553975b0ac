"""edgeship stand-in for ``azureml.contrib.services`` (raw HTTP access for entry scripts)."""
