"""What serve_app and deployments share: request types, one error hierarchy, settings, logs."""
