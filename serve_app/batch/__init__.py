"""The batch channel: synchronous batches and batch jobs, each item admitted on its own."""
