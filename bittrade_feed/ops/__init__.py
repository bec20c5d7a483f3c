"""Operations: Prometheus metrics, structured logs, the systemd protocol."""
