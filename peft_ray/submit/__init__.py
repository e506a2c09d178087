"""Submitting jobs to a running Ray cluster (``peft-ray submit`` / ``peft-ray jobs``).

- ``auth``: the cluster's token, found where Ray looks for it (never printed);
- ``upload``: what part of the working dir travels with a job, checked before upload;
- ``client``: the Ray Jobs REST client with a bounded connect and readable errors.
"""
