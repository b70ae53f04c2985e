<#
.SYNOPSIS
    Starts the MIDAS services on Windows (Redis, Celery workers, Beat, Flower, watcher, dashboard, HTTP API).

.DESCRIPTION
    Creates the project's virtual environment .venv when it is missing, installs
    requirements.txt into it when the file changed since the last install, puts .venv
    first on PATH (what activating it does), then runs

        python -m background_tasks.services start [services]

    which starts each service detached, logs to MIDAS_LOG_DIR and records PID files.
    Configuration comes from .env and the environment (see .env.example). Workers use
    the threads pool on Windows unless MIDAS_WORKER_POOL says otherwise.

    Redis: when nothing answers on REDIS_PORT, the launcher runs redis-server or
    memurai.exe itself; install one with .\Setup-Redis-Windows.ps1.

.PARAMETER Services
    Which services to start (redis, worker, worker-1, beat, flower, watcher, dashboard, api).
    Default: all.

.PARAMETER SkipInstall
    Do not create .venv or install requirements (the logon task uses this).

.PARAMETER Python
    The Python 3.11+ used to create .venv. Default: the py launcher, else python on PATH.

.EXAMPLE
    .\Start-Celery-Services.ps1

.EXAMPLE
    .\Start-Celery-Services.ps1 redis worker
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

$Requirements = Join-Path $ProjectRoot 'requirements.txt'
$Stamp = Join-Path $VenvDir '.midas-requirements.sha256'

function Get-BasePython {
    <# The command (as an array) that runs a Python 3.11 or newer, to create .venv with. #>
    param([string] $Preferred)
    $candidates = @()
    if ($Preferred) { $candidates += , @($Preferred) }
    if (Get-Command py -ErrorAction SilentlyContinue) { $candidates += , @('py', '-3') }
    if (Get-Command python -ErrorAction SilentlyContinue) { $candidates += , @('python') }
    foreach ($candidate in $candidates) {
        $exe = $candidate[0]
        $rest = @($candidate | Select-Object -Skip 1)
        $ok = & $exe @rest -c 'import sys; print(sys.version_info >= (3, 11))' 2>$null
        if ($LASTEXITCODE -eq 0 -and "$ok".Trim() -eq 'True') { return , $candidate }
    }
    throw 'Python 3.11 or newer was not found. Install it (winget install Python.Python.3.11) or pass -Python.'
}

function Initialize-Venv {
    <# Creates .venv when missing and installs requirements.txt when it changed since the last install. #>
    param([string] $Preferred)
    if (-not (Test-Path -LiteralPath $VenvPython)) {
        $base = Get-BasePython -Preferred $Preferred
        $exe = $base[0]
        $rest = @($base | Select-Object -Skip 1)
        Write-Host "Creating $VenvDir ..."
        & $exe @rest -m venv $VenvDir
        if ($LASTEXITCODE -ne 0) { throw "creating the virtual environment failed (exit code $LASTEXITCODE)" }
    }
    $hash = (Get-FileHash -LiteralPath $Requirements -Algorithm SHA256).Hash
    $installed = ''
    if (Test-Path -LiteralPath $Stamp) { $installed = (Get-Content -LiteralPath $Stamp -Raw).Trim() }
    if ($installed -ne $hash) {
        Write-Host 'Installing requirements.txt into .venv ...'
        & $VenvPython -m pip install --disable-pip-version-check -r $Requirements
        if ($LASTEXITCODE -ne 0) { throw "pip install -r requirements.txt failed (exit code $LASTEXITCODE)" }
        Set-Content -LiteralPath $Stamp -Value $hash -Encoding ascii
    }
}

if (-not $SkipInstall) {
    Initialize-Venv -Preferred $Python
}
Assert-VenvPython -Hint 'Run this script once without -SkipInstall to create it.'
Invoke-MidasLauncher -Action start -Services $Services
$started = $LASTEXITCODE
if ($started -eq 0 -and $Services.Count -eq 0) {
    # as `make run` ends: what runs, then how to search, where the dashboard and logs are, how to stop
    Invoke-MidasLauncher -Action status
    & $VenvPython -m background_tasks.launcher.next_steps
}
exit $started
