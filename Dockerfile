# The ray-rooms image for KubeRay (deploy/kubernetes/rayservice.yaml): Ray's own image of
# the version ray-rooms pins, with the ray-rooms wheel (which carries the built meeting
# page) installed on top.
#
#   pip wheel --no-deps -w dist .        # builds the page too (needs Node.js and npm)
#   docker build -t registry.example/ray-rooms:0.1.0 .
#
# Not built here (no Docker on the development machines); see docs/operating.md,
# "Kubernetes", for what was tested.
FROM rayproject/ray:2.60.0-py311

COPY dist/ray_rooms-*.whl /tmp/
RUN pip install --no-cache-dir /tmp/ray_rooms-*.whl && rm -f /tmp/ray_rooms-*.whl

# Serve's proxy on every node started from this image takes the gateway's WebSocket
# frame limit and compression (actors.gateway.proxy_callback); the RayService sets it
# too, for images built otherwise
ENV RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=actors.gateway.proxy_callback.proxy_callback
