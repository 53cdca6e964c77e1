"""Operations: local Kafka broker provisioning, Prometheus config and alert rules, Grafana."""
