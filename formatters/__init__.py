"""formatters"""
