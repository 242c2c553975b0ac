# Cells of register-model-deploy-local.ipynb, in notebook order, unedited; the profiling
# cells (Datastore, Dataset, Model.profile) are left out, and where the notebook builds
# its environment twice the second form (CondaDependencies.create) is the one run.
# The only lines that are not the notebook's are the marked ones that read the port
# from the command line and print results for the test.
import sys  # test harness
PORT = int(sys.argv[1])  # test harness

# Check core SDK version number
import azureml.core

print("SDK version:", azureml.core.VERSION)

from azureml.core import Workspace

ws = Workspace.from_config()
print(ws.name, ws.resource_group, ws.location, ws.subscription_id, sep='\n')

from azureml.core.model import Model

model = Model.register(model_path="sklearn_regression_model.pkl",
                       model_name="sklearn_regression_model_local",
                       tags={'area': "diabetes", 'type': "regression"},
                       description="Ridge regression model to predict diabetes",
                       workspace=ws)

from azureml.core.conda_dependencies import CondaDependencies
from azureml.core.environment import Environment

environment = Environment("LocalDeploy")
environment.python.conda_dependencies = CondaDependencies("myenv.yml")

from azureml.core.model import InferenceConfig

inference_config = InferenceConfig(entry_script="score.py",
                                   environment=environment)

from datetime import datetime
from azureml.core import Environment
from azureml.core.conda_dependencies import CondaDependencies
from azureml.core.model import Model, InferenceConfig


environment = Environment('my-sklearn-environment')
environment.python.conda_dependencies = CondaDependencies.create(pip_packages=[
    'azureml-defaults',
    'inference-schema[numpy-support]',
    'joblib',
    'numpy',
    'scikit-learn'
])
inference_config = InferenceConfig(entry_script='score.py', environment=environment)

from azureml.core.webservice import LocalWebservice

# This is optional, if not provided Docker will choose a random unused port.
deployment_config = LocalWebservice.deploy_configuration(port=PORT)

local_service = Model.deploy(ws, "test", [model], inference_config, deployment_config)

local_service.wait_for_deployment()

print('Local service port: {}'.format(local_service.port))

print(local_service.get_logs())

import json

sample_input = json.dumps({
    'data': [
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    ]
})

sample_input = bytes(sample_input, encoding='utf-8')

print("RESULT", json.dumps(local_service.run(input_data=sample_input)))  # test harness: print the cell's value

local_service.reload()
print("--------------------------------------------------------------")

# After calling reload(), run() will return the updated message.
print("RELOADED", json.dumps(local_service.run(input_data=sample_input)))  # test harness: print the cell's value

print("STATE", local_service.state, local_service.scoring_uri, local_service.swagger_uri)  # test harness

local_service.delete()
