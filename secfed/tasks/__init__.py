"""Tasks: what a meta-learner adapts on (support) and is scored on (query)."""

from secfed.tasks.base import Task, TaskSource
from secfed.tasks.client_task import ClientTaskSource, client_evaluation_task
from secfed.tasks.episodic import EpisodicTaskSource

__all__ = ["Task", "TaskSource", "EpisodicTaskSource", "ClientTaskSource", "client_evaluation_task"]
