{{/* Names. */}}
{{- define "arca.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "arca.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "arca.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "arca.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "arca.selectorLabels" -}}
app.kubernetes.io/name: {{ include "arca.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "arca.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "arca.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
The embedded mode (SQLite + filesystem on one volume) serves from one
process; several replicas share state only through PostgreSQL and S3.
*/}}
{{- define "arca.embedded" -}}
{{- if and (eq .Values.metadata.type "sqlite") (eq .Values.blobs.type "filesystem") -}}true{{- end -}}
{{- end -}}

{{- define "arca.validate" -}}
{{- if not (has .Values.metadata.type (list "sqlite" "postgres")) -}}
{{- fail (printf "metadata.type %q: must be sqlite or postgres" .Values.metadata.type) -}}
{{- end -}}
{{- if not (has .Values.blobs.type (list "filesystem" "s3")) -}}
{{- fail (printf "blobs.type %q: must be filesystem or s3" .Values.blobs.type) -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (or (ne .Values.metadata.type "postgres") (ne .Values.blobs.type "s3")) -}}
{{- fail (printf "replicaCount %d needs metadata.type=postgres and blobs.type=s3: replicas share state only through PostgreSQL and S3 (the embedded SQLite + filesystem mode runs 1 replica)" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and (eq .Values.metadata.type "postgres") (not .Values.metadata.postgres.url) (not .Values.metadata.postgres.urlKey) -}}
{{- fail "metadata.type=postgres needs metadata.postgres.url (or metadata.postgres.urlKey in metadata.postgres.existingSecret)" -}}
{{- end -}}
{{- if and .Values.metadata.postgres.urlKey (not .Values.metadata.postgres.existingSecret) -}}
{{- fail "metadata.postgres.urlKey needs metadata.postgres.existingSecret" -}}
{{- end -}}
{{- if and (eq .Values.blobs.type "s3") (not (hasPrefix "s3://" .Values.blobs.s3.url)) -}}
{{- fail "blobs.type=s3 needs blobs.s3.url (s3://BUCKET/PREFIX?endpoint=URL&region=R)" -}}
{{- end -}}
{{- end -}}

{{/* The environment variable Kubernetes sets for the Service's cluster IP. */}}
{{- define "arca.serviceHostEnv" -}}
{{- printf "%s_SERVICE_HOST" (include "arca.fullname" . | upper | replace "-" "_") -}}
{{- end -}}
