"""Point-cloud networks: the SPVCNN-style sparse voxel U-Net with SphereFormer blocks, SECOND's backbone."""
