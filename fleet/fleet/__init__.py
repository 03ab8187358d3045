"""millwright fleet: what many gateways publish, as a Parquet dataset and the plant-wide view (Ray Data)."""
