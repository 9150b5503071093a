"""The upload engine: ready samples -> concatenated multipart objects in Gencove's S3 -> project assignment."""
