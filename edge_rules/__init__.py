"""Edge rules: what leaves a twin (report-by-exception, quality rules), rules and analytics that
raise alarms and derive values, and interlocks on control. Stands on ``edgetwin.core`` only;
rule kinds are entry points in ``edgetwin.rules``."""
