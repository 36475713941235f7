"""The synthetic multi-modal driving world: procedural scenes, ray-cast LiDAR and cameras, real-format writers."""
