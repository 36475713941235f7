"""Pure geometry functions on numpy arrays (and torch tensors where a batch needs them).

Conventions (DESIGN.md): points stay in their LiDAR frame; boxes are (x, y, z, dx, dy, dz, yaw) with yaw
about +z; cameras follow OpenCV (x right, y down, z forward) with `K` 3x3 and `T_cam_lidar` 4x4.
"""
