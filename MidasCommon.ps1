<#
.SYNOPSIS
    What Start-Celery-Services.ps1 and Stop-Celery-Services.ps1 share: where .venv and its
    python are, and running the MIDAS launcher with that python.

.DESCRIPTION
    Dot-source it from a script beside it:

        . (Join-Path $PSScriptRoot 'MidasCommon.ps1')

    It defines $ProjectRoot, $VenvDir and $VenvPython and the functions Assert-VenvPython
    and Invoke-MidasLauncher in the caller's scope. It installs nothing: creating .venv
    and installing requirements.txt is Start-Celery-Services.ps1's job alone.
#>
# No parameters: a dot-sourced script's parameters would become (and overwrite) the caller's variables.
param()

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$ProjectRoot = $PSScriptRoot
$VenvDir = Join-Path $ProjectRoot '.venv'
$VenvPython = Join-Path $VenvDir 'Scripts\python.exe'

function Assert-VenvPython {
    <# Stops with a message saying what to do when .venv has no python. #>
    param([string] $Hint)
    if (-not (Test-Path -LiteralPath $VenvPython)) {
        throw "There is no virtual environment in $VenvDir ($VenvPython is missing). $Hint"
    }
}

function Invoke-MidasLauncher {
    <# Runs python -m background_tasks.services <Action> [services] from .venv; $LASTEXITCODE is its exit code. #>
    param(
        [Parameter(Mandatory = $true)] [string] $Action,
        [string[]] $Services = @()
    )
    Set-Location -LiteralPath $ProjectRoot
    # What Activate.ps1 does, without depending on the execution policy allowing it.
    $env:VIRTUAL_ENV = $VenvDir
    $env:PATH = (Join-Path $VenvDir 'Scripts') + [System.IO.Path]::PathSeparator + $env:PATH
    & $VenvPython -m background_tasks.services $Action @Services
}
