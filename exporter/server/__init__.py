"""Running the service: gunicorn's configuration and worker, the WSGI entry point, startup
checks, background sweeps."""
