"""Networks: image backbones and decoders (`image/`), sparse point backbones (`point/`), fusion and heads."""
