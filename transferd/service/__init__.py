"""The daemon: lifecycle, HTTP endpoints, systemd integration and `status`."""
