"""Control-plane HTTP API, wire-compatible with DigitalOcean's /v2/dedicated-inferences."""
