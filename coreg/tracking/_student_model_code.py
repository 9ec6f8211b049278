"""MLflow "models from code" file of the student pyfunc (see :mod:`coreg.tracking.student_model`).

MLflow copies this file into the logged model and runs it when the model is loaded; it only
names the model class, which comes from the installed ``coreg``.
"""

import mlflow.models

from coreg.tracking.student_model import StudentPyfunc

mlflow.models.set_model(StudentPyfunc())
