# MemShadow service image: embedded defaults, data on a volume, non-root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    MEMSHADOW_HOST=0.0.0.0 \
    MEMSHADOW_PORT=8080 \
    MEMSHADOW_DATA_DIR=/data

WORKDIR /app
# torch first, CPU build: the default wheel drags in several GB of CUDA libraries.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md constraints.txt ./
COPY proxy ./proxy
COPY memory ./memory
COPY formatters ./formatters
COPY policies ./policies
COPY config ./config
RUN pip install .

RUN useradd --system --uid 10001 --home-dir /data memshadow \
    && mkdir -p /data && chown memshadow /data
USER memshadow
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"

ENTRYPOINT ["memshadow"]
CMD ["serve"]
