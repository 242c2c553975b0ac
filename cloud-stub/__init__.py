"""Hub: REST API and MQTT publisher that deploys signed documents to groups of devices."""
