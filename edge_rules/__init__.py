"""Edge rules: decide what leaves a twin (report-by-exception) and, later, alarms and analytics."""
