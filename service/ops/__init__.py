"""Operating the service: metrics, JSOC reachability, health, logs and the configuration file."""
