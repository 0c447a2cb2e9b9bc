"""Export a trained policy: policy.npz, ONNX, C header, signing, push over MQTT."""
