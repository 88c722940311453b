"""Node processes of gradchain and the MQTT brokers they connect through."""
