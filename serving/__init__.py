"""Model serving (Ray Serve deployments). Filled in by the scale issue; nothing here yet."""
