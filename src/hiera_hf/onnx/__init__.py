"""ONNX export of Hiera and SAM 2 (`export`, needs torch) and a torch-free ONNX Runtime backend (`runtime`,
`video_session`: need only onnxruntime, numpy and pillow). Nothing is imported here, so that importing the runtime
never loads torch."""
