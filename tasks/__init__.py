"""Task suites (related, unrelated math, general) as lm-eval tasks, their generators and scoring."""

from tasks.errors import TaskDataError
from tasks.importer import load_examples
from tasks.prompt_format import PromptFormat, PromptFormatError
from tasks.records import LEVELS, SUITES, ErrorMix, Example, Level, Problem, Suite
from tasks.scoring import Verdict, answers_match, extract_answer, judge_answer
from tasks.suites import eval_problems, group_name, task_name
from tasks.training import build_training_data
from tasks.verify import verify_problem

__all__ = [
    "LEVELS",
    "SUITES",
    "ErrorMix",
    "Example",
    "Level",
    "Problem",
    "PromptFormat",
    "PromptFormatError",
    "Suite",
    "TaskDataError",
    "Verdict",
    "answers_match",
    "build_training_data",
    "eval_problems",
    "extract_answer",
    "group_name",
    "judge_answer",
    "load_examples",
    "task_name",
    "verify_problem",
]
