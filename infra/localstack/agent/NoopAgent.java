// LocalStack always starts DynamoDB Local with `-javaagent:ddb-local-loader-0.1.jar`, which it
// normally downloads. This agent does nothing; only LocalStack's >20-GSI patch is lost.
public final class NoopAgent {
    public static void premain(String args, java.lang.instrument.Instrumentation inst) {}
}
