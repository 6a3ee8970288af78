# One image for the API and the workers: the project with its conversion stack.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MODELS_DIR=/models MODEL_DOWNLOAD_PROJECT_DIR=/app
WORKDIR /app

COPY pyproject.toml constraints.txt README.md ./
COPY model_download ./model_download
COPY plugins ./plugins
COPY tasks ./tasks
COPY flows ./flows
COPY deployments ./deployments
COPY api ./api
COPY prefect.yaml ./
RUN pip install --no-cache-dir --constraint constraints.txt ".[openvino]"

VOLUME ["/models"]
EXPOSE 8000
CMD ["uvicorn", "api.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
