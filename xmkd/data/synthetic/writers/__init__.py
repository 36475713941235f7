"""Writers of synthetic scenes in real dataset formats (nuScenes + lidarseg, SemanticKITTI, KITTI object).

Each writer has a `write_scene(...)` that renders one scene and writes its files (so scenes can be
rendered in worker processes) and returns the records the dataset-level index needs, and a
`finish(...)` that writes those indexes.
"""
