<#
.SYNOPSIS
    Stops the MIDAS services that Start-Celery-Services.ps1 started.

.DESCRIPTION
    Installs nothing: it finds the python of the project's virtual environment .venv
    (which Start-Celery-Services.ps1 creates), puts .venv first on PATH (what activating
    it does), then runs

        python -m background_tasks.services stop [services]

    When there is no .venv it says so and stops (services started with another python
    stop with that python: python -m background_tasks.services stop).

    Order: watcher and api, dashboard, flower, beat, workers, then Redis. Workers get a warm
    shutdown (running tasks finish) for up to MIDAS_SERVICE_STOP_TIMEOUT seconds before
    they are ended. Only processes recorded in the launcher's PID files are touched: a
    Redis or Memurai service that MIDAS did not start keeps running.

.PARAMETER Services
    Which services to stop (redis, worker, worker-1, beat, flower, watcher, dashboard, api).
    Default: all.

.PARAMETER SkipInstall
    No effect (stopping installs nothing); accepted so that older calls keep working.

.PARAMETER Python
    No effect (stopping uses the python of .venv); accepted so that older calls keep working.

.EXAMPLE
    .\Stop-Celery-Services.ps1

.EXAMPLE
    .\Stop-Celery-Services.ps1 flower dashboard
#>
[CmdletBinding()]
param(
    [Parameter(Position = 0, ValueFromRemainingArguments = $true)]
    [string[]] $Services = @(),

    [switch] $SkipInstall,

    [string] $Python = ''
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
. (Join-Path $PSScriptRoot 'MidasCommon.ps1')

Assert-VenvPython -Hint ('Start-Celery-Services.ps1 creates it; services started with another python stop with: ' +
    '<that python> -m background_tasks.services stop')
Invoke-MidasLauncher -Action stop -Services $Services
exit $LASTEXITCODE
