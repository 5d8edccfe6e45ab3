{{- define "umbrella.fullname" -}}
{{- if .Values.name }}{{ .Values.name | trunc 63 | trimSuffix "-" }}{{- else }}{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end }}
{{- end }}

{{- define "umbrella.labels" -}}
{{ include "lib.labels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
