# vtla-bridge: inference server + HTTP companion (+ the openpi endpoint, 8001) in one image (compose.yaml runs the first two as services).
#   docker build -t vtla-bridge .
#   docker run --gpus all -p 5555:5555 -p 8000:8000 -p 8001:8001 -v /path/to/checkpoints:/models vtla-bridge \
#       up --config /models/bridge.toml --bind tcp://0.0.0.0:5555
# Without --config it serves the tiny presets with RANDOM WEIGHTS (it says so at start).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libegl1 libosmesa6 tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch from PyPI on linux/x86_64 is the CUDA build: bf16 on the GPU when run with --gpus all
RUN pip install "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY vtla_contracts ./vtla_contracts
COPY bridge ./bridge
COPY models ./models
COPY sim_adapters ./sim_adapters
COPY bench ./bench
COPY configs ./configs
RUN pip install ".[server,hub]"

# A config for containers: listen on all interfaces (inside the container only).
RUN sed -e 's|^bind = "tcp://127.0.0.1:5555"|bind = "tcp://0.0.0.0:5555"|' \
        -e 's|^host = "127.0.0.1"|host = "0.0.0.0"|' configs/default.toml > /app/container.toml

EXPOSE 5555 8000 8001
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"
ENTRYPOINT ["tini", "--", "vtla-bridge"]
CMD ["up", "--config", "/app/container.toml"]
