"""Rewards for flow-model RL: multi-reward combination (GDPO, artifact gate), prompt rubrics
(LLM decomposition, VLM / deterministic verifiers, dependency gating), an aesthetic
Bradley-Terry head, an artifact classifier, a text-rendering (OCR) reward, and an
asynchronous scorer. See docs/k2-rl.md (rewards).
"""

from k2_rl.rewards._aesthetic import (
    AestheticHead,
    AestheticHeadConfig,
    bradley_terry_loss,
    fit_bradley_terry,
    preference_accuracy,
)
from k2_rl.rewards._artifact import (
    ArtifactClassifier,
    EmbeddingArtifactClassifier,
    LogisticArtifactHead,
    fit_artifact_head,
)
from k2_rl.rewards._async import AsyncRewardScorer, RewardFn
from k2_rl.rewards._combine import (
    artifact_gate,
    artifact_penalty,
    combine_rewards,
    gdpo_advantages,
    group_normalize,
    sum_then_normalize_advantages,
)
from k2_rl.rewards._decompose import INSTRUCTIONS, LLMDecomposer, RubricParseError, parse_rubric
from k2_rl.rewards._ocr import (
    OCRFn,
    OCRVerifier,
    levenshtein,
    quoted_text,
    text_rendering_reward,
    text_similarity,
)
from k2_rl.rewards._rubric import (
    RUBRIC_TYPES,
    Decomposer,
    ImageBatch,
    Requirement,
    Rubric,
    Verifier,
)
from k2_rl.rewards._rubric_score import (
    RequirementTable,
    RoutedVerifier,
    RubricReward,
    rubric_reward,
)
from k2_rl.rewards._vlm import QUESTION, VLMYesNoVerifier, yes_no_probability

__all__ = [
    "INSTRUCTIONS",
    "QUESTION",
    "RUBRIC_TYPES",
    "AestheticHead",
    "AestheticHeadConfig",
    "ArtifactClassifier",
    "AsyncRewardScorer",
    "Decomposer",
    "EmbeddingArtifactClassifier",
    "ImageBatch",
    "LLMDecomposer",
    "LogisticArtifactHead",
    "OCRFn",
    "OCRVerifier",
    "Requirement",
    "RequirementTable",
    "RewardFn",
    "RoutedVerifier",
    "Rubric",
    "RubricParseError",
    "RubricReward",
    "VLMYesNoVerifier",
    "Verifier",
    "artifact_gate",
    "artifact_penalty",
    "bradley_terry_loss",
    "combine_rewards",
    "fit_artifact_head",
    "fit_bradley_terry",
    "gdpo_advantages",
    "group_normalize",
    "levenshtein",
    "parse_rubric",
    "preference_accuracy",
    "quoted_text",
    "rubric_reward",
    "sum_then_normalize_advantages",
    "text_rendering_reward",
    "text_similarity",
    "yes_no_probability",
]
