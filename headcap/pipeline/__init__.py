"""The stage runner (see runner.py) and the dataclass-config -> CLI flags bridge (cli_config.py).

Stages live with the stage they run (`headcap.pipeline.stages`); commands are thin users."""
from headcap.pipeline.runner import Pipeline, Stage, StageContext, StageResult

__all__ = ["Pipeline", "Stage", "StageContext", "StageResult"]
