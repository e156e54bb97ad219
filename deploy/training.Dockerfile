# A reference training image for kubetrain's Kubernetes engine.
#
# What a job's image needs, and why so little:
# * python3 on PATH. The pod's init container runs `python3 -c ...` with this same image to fetch the job's
#   code snapshot and the in-job SDK from the master (with the job's own token), and the job then finds the
#   SDK first on its PYTHONPATH (/kubetrain/sdk). So kubetrain itself is NOT installed here: the SDK always
#   matches the master that runs the job, and any image with Python (3.11.4 or newer: safe tar extraction)
#   works, including ones you already have.
# * Your libraries. Install what your training code imports; the ones below run examples/digits
#   (scikit-learn) and CPU PyTorch jobs. For GPUs, start from an image with CUDA instead (e.g.
#   pytorch/pytorch:<version>-cuda<x>-cudnn<y>-runtime) and keep the rest of this recipe.
# * No code. The job's code comes from its snapshot (`kubetrain run` uploads it), so changing code needs
#   no image rebuild or registry push; bake code in only for jobs submitted with --no-snapshot.
#
# Build and use:
#   docker build -f deploy/training.Dockerfile -t registry.example/ml/train:1 deploy/
#   kubetrain run --image registry.example/ml/train:1 -- python train.py
#   (or kubernetes.image in the master's config.yaml: the image for jobs that name none)

FROM python:3.12-slim

# Unbuffered output: `kubetrain logs -f` shows lines as they are printed. No .pyc files in the image layers.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU-only PyTorch from its own index: the default wheel pulls ~2 GB of CUDA libraries a CPU node never uses.
# Remove this line if your jobs do not use torch.
ARG TORCH_VERSION=2.5.1
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

# What examples/digits imports; replace with your project's requirements (e.g. COPY requirements.txt + pip -r).
RUN pip install "numpy>=1.26" "scikit-learn>=1.3"

# Jobs run as the submitter's uid when the master maps users (a securityContext on the pod), or as this
# unprivileged user otherwise: a writable home for caches (torch, Hugging Face) either way.
RUN useradd --create-home --uid 1000 trainer && chmod 1777 /home/trainer
ENV HOME=/home/trainer
USER 1000
WORKDIR /home/trainer
