"""TopK sparse autoencoder on image embeddings, used as an unsupervised tagger (Krea 2 report, Data).

The report trains an SAE on SigLIP-2 embeddings, has a VLM name each feature from its
top-activating samples, tags every image with its predominant features, and filters
visual artifacts by tag. `TopKSAE` / `topk_sae_loss` follow Gao et al. 2024 (pre-bias,
TopK, unit-norm decoder columns, AuxK on dead latents); `train_sae` is the loop;
`top_activating_samples`, `annotate_features`, `predominant_features`, `feature_tags`,
`filter_by_tags` and `tag_table` turn the codes into tags. See docs/k2-data-cluster.md.
"""

from k2_data.sae._features import (
    FeatureHook,
    annotate_features,
    encode_dataset,
    feature_tags,
    filter_by_tags,
    predominant_features,
    tag_table,
    top_activating_samples,
)
from k2_data.sae._model import SAEConfig, TopKSAE, geometric_median, topk_codes, topk_sae_loss
from k2_data.sae._train import StepCallback, train_sae

__all__ = [
    "FeatureHook",
    "SAEConfig",
    "StepCallback",
    "TopKSAE",
    "annotate_features",
    "encode_dataset",
    "feature_tags",
    "filter_by_tags",
    "geometric_median",
    "predominant_features",
    "tag_table",
    "top_activating_samples",
    "topk_codes",
    "topk_sae_loss",
    "train_sae",
]
