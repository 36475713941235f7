"""Pictures: point-on-image overlays, label maps, bird's-eye views, curves and run reports."""
