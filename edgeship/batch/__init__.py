"""Batch scoring with Azure ML ParallelRunStep's entry-script contract, resumable after a kill."""
