"""Running the service: gunicorn's configuration and worker, startup checks, background sweeps."""
