"""Publishing run directories as Hugging Face datasets (issue 7), and reading published ones back.

``dataset`` (rows and schema), ``card`` (the dataset card), ``hub`` (folder, token, one-commit
upload; ``publish_run`` and ``preview``), ``published`` (reading published datasets back: interp
datasets and the EleutherAI JSON layout).
"""
