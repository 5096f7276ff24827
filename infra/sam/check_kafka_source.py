"""The template's Kafka source, resolved as CloudFormation would for each way to deploy it.

The linters only see the defaults (KafkaSource none, where every Kafka part is absent), so this
resolves the conditions and intrinsic functions of the parts that matter for an MSK cluster with
IAM access control, one with SASL/SCRAM, and a self-managed cluster, and checks what each stack
would get: one mapping per consumer function with its own consumer group, the topic and group
ARNs the roles are granted (built from the cluster's ARN), and the secret only where it is used.

Run with the SAM CLI's Python: .tools/aws-sam-cli/bin/python infra/sam/check_kafka_source.py
"""

import sys

from cfnlint.decode import cfn_yaml

TEMPLATE = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
STACK, REGION, ACCOUNT = "tidemark", "eu-west-1", "123456789012"
CLUSTER = f"arn:aws:kafka:{REGION}:{ACCOUNT}:cluster/orders/6357e0b2-0e6a-4b86-a0b4-70df934c2e31-5"
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:AmazonMSK_tidemark-AbCdEf"
CONSUMERS = {"ProcessorFunction": ("ProcessorRole", "processor"),
             "ArchiverFunction": ("ArchiverRole", "archiver"),
             "StatusViewFunction": ("StatusViewRole", "status-view")}
NO_VALUE = object()


class Stack:
    def __init__(self, template, parameters):
        self.template = template
        self.values = {name: p.get("Default", "") for name, p in template["Parameters"].items()}
        self.values.update(parameters)
        self.values.update({"AWS::StackName": STACK, "AWS::Region": REGION,
                            "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"})

    def condition(self, name):
        return self.resolve(self.template["Conditions"][name])

    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.values:
            value = self.values[name]
            kind = self.template["Parameters"].get(name, {}).get("Type")
            return value.split(",") if kind == "CommaDelimitedList" else value
        return {"Ref": name}  # a resource: left as it is

    def sub(self, text, names):
        for name, value in {**self.values, **names}.items():
            text = text.replace("${" + name + "}", str(value))
        return text

    def resolve(self, value):
        if isinstance(value, list):
            return [v for v in (self.resolve(item) for item in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                left, right = self.resolve(arg)
                return left == right
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(arg))
            if key == "Fn::Sub":
                return self.sub(arg, {}) if isinstance(arg, str) else self.sub(arg[0], self.resolve(arg[1]))
            if key == "Fn::Join":
                return arg[0].join(self.resolve(arg[1]))
            if key == "Fn::Split":
                return self.resolve(arg[1]).split(arg[0])
            if key == "Fn::Select":
                return self.resolve(arg[1])[arg[0]]
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not NO_VALUE}


def check(stack, label, secret):
    problems = []
    resources = stack.template["Resources"]
    mappings = {name: r for name, r in resources.items()
                if r["Type"] == "AWS::Lambda::EventSourceMapping" and "Topics" in r["Properties"]
                and stack.condition(r["Condition"])}
    msk = stack.values["KafkaSource"] == "msk"
    for function, (role, consumer) in CONSUMERS.items():
        group = f"{STACK}-{consumer}"
        fed = [stack.resolve(m["Properties"]) for m in mappings.values()
               if m["Properties"]["FunctionName"] == {"Ref": function}]
        if len(fed) != 1:
            problems.append(f"{function}: {len(fed)} Kafka mappings")
            continue
        props = fed[0]
        config = "AmazonManagedKafkaEventSourceConfig" if msk else "SelfManagedKafkaEventSourceConfig"
        if props.get(config) != {"ConsumerGroupId": group}:
            problems.append(f"{function}: {config} is {props.get(config)}, not group {group}")
        if msk and props.get("EventSourceArn") != CLUSTER:
            problems.append(f"{function}: EventSourceArn {props.get('EventSourceArn')}")
        if not msk and props.get("SelfManagedEventSource") != {
                "Endpoints": {"KafkaBootstrapServers": stack.values["KafkaBootstrapServers"].split(",")}}:
            problems.append(f"{function}: SelfManagedEventSource {props.get('SelfManagedEventSource')}")
        access = props.get("SourceAccessConfigurations")
        if access != ([{"Type": "SASL_SCRAM_512_AUTH", "URI": SECRET}] if secret else None):
            problems.append(f"{function}: SourceAccessConfigurations {access}")
        if props.get("Topics") != ["orders"]:
            problems.append(f"{function}: Topics {props.get('Topics')}")

        policy = stack.resolve(resources[role]["Properties"]["Policies"][0]["PolicyDocument"])
        granted = {s["Sid"]: s for s in policy["Statement"]}
        iam = msk and not secret
        expected = {
            "MskCluster": msk, "MskNetworkInterfaces": msk, "MskIamConnect": iam,
            "MskIamReadTopic": iam, "MskIamConsumerGroup": iam, "KafkaSaslSecret": secret,
        }
        for sid, present in expected.items():
            if (sid in granted) != present:
                problems.append(f"{role}: statement {sid} {'missing' if present else 'granted'}")
        prefix, path = CLUSTER.split(":cluster/")
        arns = {"MskIamReadTopic": f"{prefix}:topic/{path}/orders",
                "MskIamConsumerGroup": f"{prefix}:group/{path}/{group}",
                "MskIamConnect": CLUSTER, "MskCluster": CLUSTER, "KafkaSaslSecret": SECRET}
        for sid, arn in arns.items():
            if sid in granted and granted[sid]["Resource"] != arn:
                problems.append(f"{role}/{sid}: Resource {granted[sid]['Resource']}, expected {arn}")
    print(f"{label}: {'; '.join(problems) if problems else 'mappings and grants as expected'}")
    return problems


def main():
    template = cfn_yaml.load(TEMPLATE)
    cases = [
        ("MSK, IAM access control", {"KafkaSource": "msk", "KafkaTopic": "orders", "KafkaClusterArn": CLUSTER}, False),
        ("MSK, SASL/SCRAM", {"KafkaSource": "msk", "KafkaTopic": "orders", "KafkaClusterArn": CLUSTER,
                             "KafkaSecretArn": SECRET}, True),
        ("self-managed, SASL/SCRAM", {"KafkaSource": "self-managed", "KafkaTopic": "orders",
                                      "KafkaBootstrapServers": "b1.example.com:9096,b2.example.com:9096",
                                      "KafkaSecretArn": SECRET}, True),
        ("self-managed, no authentication", {"KafkaSource": "self-managed", "KafkaTopic": "orders",
                                             "KafkaBootstrapServers": "b1.example.com:9092"}, False),
    ]
    problems = [p for label, parameters, secret in cases for p in check(Stack(template, parameters), label, secret)]
    none = Stack(template, {})
    if any(none.condition(r["Condition"]) for r in template["Resources"].values()
           if r["Type"] == "AWS::Lambda::EventSourceMapping" and "Topics" in r["Properties"]):
        problems.append("KafkaSource none still creates a Kafka mapping")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
